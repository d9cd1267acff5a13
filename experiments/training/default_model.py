"""The shipped SRL model (``starbucks-minilm-l6-srl``), end to end: data, training, the mix chosen
on validation sets, shipping, results. It was the default model until the adaptor model
(``experiments.training.default_adaptors``) replaced it; its ``data`` stage also holds out the
validation queries that model is chosen on.

    python -m experiments.training.default_model                      # every stage, skipping finished ones
    python -m experiments.training.default_model --stages select ship evaluate
    python -m experiments.training.default_model --config experiments/configs/OTHER.json --stages train select evaluate

Stages:

- ``data``: SciFact and NFCorpus train queries with BM25 hard negatives, a random share of
  their judged queries held out for validation, plus label-free pseudo-queries cut from both
  corpora (never a test split, never DL19), and the STS-B train sentences as texts of other
  domains for a recipe whose anchor covers them (``anchor_files``).
- ``train``: ``starbucks train experiments/configs/starbucks-minilm-l6.json`` (SRL with the
  base model as a frozen teacher).
- ``select``: mixes the trained weights with the base model's (``starbucks merge``) at growing
  base shares and keeps the first mix whose full size is at least the base model's on every
  held-out query set: the most trained weights that give up nothing at the full size. Each mix is
  also scored on out-of-domain validation sets no result reports (CACM, Vaswani, STS-B dev,
  SICK trial), which the selection table shows beside them.
- ``ship``: writes that mix as float16 safetensors into ``starbucks/models/starbucks-minilm-l6-srl``
  with its model card.
- ``evaluate``: per-size nDCG@10 on SciFact test, NFCorpus dev and the DL19 pool and Spearman on
  STS-B and SICK-R, for the base model and the recipe's chosen mix (the shipped model itself when
  the recipe is the shipped one, whose card then gets the table).

A recipe is one config; its selection and results are named after the config file, so a
candidate recipe (``--config``) is trained, selected and evaluated beside the shipped one
without touching it, and ``ship`` makes it the default.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from experiments.datasets import COLLECTIONS, DATA, Collection
from experiments.training.compare import HERE, table
from experiments.training.per_size import evaluate
from starbucks.model import BASE_MODEL_NAME, REPO_MODELS
from starbucks.sizes import Size
from training.build_data import build_pseudo_data, build_train_data, holdout_path
from training.config import TrainConfig
from training.loop import train
from training.losses.sts import read_sts_rows
from training.merge import merge_folders

STAGES = ("data", "train", "select", "ship", "evaluate")
CONFIG = HERE.parent / "configs" / "starbucks-minilm-l6.json"
SRL_MODEL_NAME = "starbucks-minilm-l6-srl"
SHIPPED = REPO_MODELS / SRL_MODEL_NAME
RESULTS = HERE / "results"
TRAIN_DATA = Path("runs/train-data")
HOLDOUT = {"scifact": 100, "nfcorpus": 200}  # judged train queries kept for validation
# Validation sets of other domains and tasks, each a split no reported result uses: reported
# beside the held-out queries for every mix, since the training data is scientific and medical only.
OUT_OF_DOMAIN = ["cacm", "vaswani", "stsb-dev", "sickr-trial"]
PSEUDO = 2000  # label-free pseudo-queries per corpus
SENTENCES = TRAIN_DATA / "stsb-train-sentences.jsonl"  # texts of other domains, for anchor_files
BASE_SHARES = (0.0, 0.25, 0.5, 0.75)  # base-model shares tried, in order
EVAL_SETS = ["scifact", "nfcorpus", "dl19", "stsb", "sickr"]
BASE_RESULTS = "all-MiniLM-L6-v2.json"


class Recipe:
    """A training config and the files its selection and results go to, named after the config."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = self.path.stem
        self.cfg = TrainConfig.load(self.path)

    @property
    def selection(self) -> Path:
        return RESULTS / f"{self.name}-selection.json"

    @property
    def results(self) -> Path:
        return RESULTS / f"{self.name}.json"

    def mix(self, share: float) -> Path:
        return Path(f"{self.cfg.output}-mix{share:g}")

    def chosen_share(self) -> float:
        return json.loads(self.selection.read_text())["chosen_base_share"]

    def is_shipped(self) -> bool:
        return self.cfg.matches(SHIPPED / "train_config.json")


def train_file(name: str, kind: str) -> Path:
    return TRAIN_DATA / f"{name}-{kind}-bm25.jsonl"


def validation_sets() -> dict[str, Collection]:
    """The held-out train queries of each collection, searched over its whole corpus, and the
    out-of-domain retrieval sets (collections no result here reports)."""
    held = {f"{name}-holdout": Collection(str(DATA / name), str(DATA / name / "queries.jsonl"),
                                          str(holdout_path(train_file(name, "train"))))
            for name in HOLDOUT}
    return {**held, **{name: COLLECTIONS[name] for name in OUT_OF_DOMAIN if name in COLLECTIONS}}


def validation_names() -> list[str]:
    return [*validation_sets(), *(name for name in OUT_OF_DOMAIN if name not in COLLECTIONS)]


def write_sentences(source: Path, out: Path) -> int:
    """The distinct sentences of an STS-B file as JSONL texts, written whole or not at all."""
    sentences = dict.fromkeys(s for pair in zip(*read_sts_rows(source).columns) for s in pair)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps({"_id": str(i), "text": s}) + "\n" for i, s in enumerate(sentences)),
                   encoding="utf-8")
    tmp.replace(out)
    return len(sentences)


def stage_data(recipe: Recipe) -> None:
    for name, count in HOLDOUT.items():
        folder = DATA / name
        if not train_file(name, "train").exists():
            n = build_train_data(folder, folder / "queries.jsonl", folder / "qrels" / "train.tsv",
                                 train_file(name, "train"), holdout=count)
            print(f"{name}: {n} training queries, {count} held out")
        if not train_file(name, "pseudo").exists():
            n = build_pseudo_data(folder, train_file(name, "pseudo"), PSEUDO)
            print(f"{name}: {n} pseudo-queries")
    if not SENTENCES.exists():
        print(f"STS-B train: {write_sentences(DATA / 'sts/stsbenchmark/sts-train.csv', SENTENCES)} sentences")


def stage_train(recipe: Recipe) -> None:
    if not (Path(recipe.cfg.output) / "config.json").is_file():
        train(recipe.cfg)


def _full(scores: dict[str, float]) -> float:
    return scores[str(max(Size.parse(s) for s in scores))]


def _base_scores() -> dict:
    """The base model's validation scores from selections already made: the same model on the same sets."""
    base: dict = {"sizes": [], "scores": {}}
    for path in sorted(RESULTS.glob("*-selection.json")):
        known = json.loads(path.read_text())["candidates"].get("base", {})
        base["sizes"] = known.get("sizes", base["sizes"])
        base["scores"].update(known.get("scores", {}))
    return base


def stage_select(recipe: Recipe) -> float:
    """The smallest base share whose full size matches the base model's on every held-out query set."""
    selection = recipe.selection
    done = json.loads(selection.read_text()) if selection.exists() else {"candidates": {}}
    names = validation_names()
    done["candidates"]["base"] = _base_scores()  # this selection's own base scores among them

    def scores(key: str, path: Path | str, prepare=lambda: None) -> dict:
        known = done["candidates"].setdefault(key, {"sizes": [], "scores": {}})
        todo = [n for n in names if n not in known["scores"]]
        if todo:
            prepare()
            result = evaluate(str(path), todo, collections=validation_sets())
            known.update(sizes=result["sizes"], scores={**known["scores"], **result["scores"]})
            selection.write_text(json.dumps(done, indent=2) + "\n")
        return known["scores"]

    base = scores("base", BASE_MODEL_NAME)
    for share in BASE_SHARES:
        mix = recipe.mix(share)

        def make_mix() -> None:
            if not (mix / "config.json").is_file():
                merge_folders(recipe.cfg.output, mix, base_weight=share, dtype="float32")

        trained = scores(f"mix {share:g}", mix, make_mix)
        if all(_full(trained[n]) >= _full(base[n]) for n in names if n.endswith("-holdout")):
            done["chosen_base_share"] = share
            selection.write_text(json.dumps(done, indent=2) + "\n")
            write_selection_table(recipe, done, f"chosen base share: {share:g}")
            return share
    write_selection_table(recipe, done, "no mix chosen")
    raise SystemExit("no mix keeps the full size at the base model's level on the held-out queries: nothing shipped")


def write_selection_table(recipe: Recipe, done: dict, outcome: str) -> None:
    recipe.selection.with_suffix(".md").write_text(
        f"Validation sets, nDCG@10 or Spearman (`python -m experiments.training.default_model --config "
        f"experiments/configs/{recipe.path.name} --stages select`); {outcome}\n\n"
        + table(done["candidates"], validation_names()))


def stage_ship(recipe: Recipe) -> None:
    """The chosen mix as float16, swapped in whole: a failure leaves the shipped model as it was."""
    staging = SHIPPED.with_name(SHIPPED.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    merge_folders(recipe.cfg.output, staging, base_weight=recipe.chosen_share(), dtype="float16")
    (staging / "train_config.json").write_text(json.dumps(recipe.cfg.to_dict(), indent=2) + "\n")
    old = SHIPPED.with_name(SHIPPED.name + ".old")
    if SHIPPED.exists():
        SHIPPED.rename(old)
    staging.rename(SHIPPED)
    shutil.rmtree(old, ignore_errors=True)
    write_card(recipe)


def evaluations(recipe: Recipe) -> dict[str, Path]:
    return {"base": RESULTS / BASE_RESULTS, "shipped": recipe.results}


def stage_evaluate(recipe: Recipe) -> None:
    """Every evaluation set for the base model and the recipe's chosen mix; a changed model is evaluated afresh."""
    from starbucks.model import StarbucksModel

    mix = SHIPPED if recipe.is_shipped() else Path(f"{recipe.mix(recipe.chosen_share())}-float16")
    if not (mix / "config.json").is_file():  # the weights ship would write, so shipping keeps these results
        merge_folders(recipe.cfg.output, mix, base_weight=recipe.chosen_share(), dtype="float16")
    models = {"base": BASE_MODEL_NAME, "shipped": str(mix)}
    for key, out in evaluations(recipe).items():
        fingerprint = StarbucksModel.load(models[key], device="cpu").fingerprint()
        done = json.loads(out.read_text()) if out.exists() else {}
        if done.get("fingerprint") not in (None, fingerprint) or key == "shipped" and "fingerprint" not in done:
            done = {}
        scores, seconds = done.get("scores", {}), done.get("seconds", {})
        todo = [d for d in EVAL_SETS if d not in scores]
        if todo:
            result = evaluate(models[key], todo)
            scores.update(result["scores"])
            seconds.update(result["seconds"])
            out.write_text(json.dumps({"name": key, "model": Path(models[key]).name, "fingerprint": fingerprint,
                                       "sizes": result["sizes"], "scores": scores, "seconds": seconds},
                                      indent=2) + "\n")
    if recipe.is_shipped():
        write_card(recipe)


def results_table(recipe: Recipe) -> str:
    labels = {"base": "all-MiniLM-L6-v2 (base), truncated",
              "shipped": SRL_MODEL_NAME if recipe.is_shipped() else recipe.name}
    results = {labels[k]: json.loads(p.read_text()) for k, p in evaluations(recipe).items() if p.exists()}
    if len(results) < 2:
        return ("(not evaluated yet: `python -m experiments.training.default_model --config "
                f"experiments/configs/{recipe.path.name} --stages evaluate`)\n")
    return table(results, [d for d in EVAL_SETS if all(d in r["scores"] for r in results.values())])


def full_size_losses(recipe: Recipe) -> str:
    """Where the shipped full size falls below the base model's: the card says so."""
    results = {k: json.loads(p.read_text())["scores"] for k, p in evaluations(recipe).items() if p.exists()}
    if len(results) < 2:
        return ""
    below = [f"{d} ({_full(results['shipped'][d]):.3f} against {_full(results['base'][d]):.3f})"
             for d in EVAL_SETS if d in results["shipped"] and d in results["base"]
             and _full(results["shipped"][d]) < _full(results["base"][d])]
    if not below:
        return "The full size is at least the base model's on every set.\n"
    return ("The full size is below the base model's on " + ", ".join(below) + ": the held-out queries that"
            " chose the mix come from SciFact and NFCorpus only, and these sets are of other domains or tasks.\n")


def write_card(recipe: Recipe) -> None:
    cfg = recipe.cfg
    selection = json.loads(recipe.selection.read_text())
    share = selection["chosen_base_share"]
    names = [n for n in validation_names() if all(n in c["scores"] for c in selection["candidates"].values())]
    shown = [n for n in OUT_OF_DOMAIN if n in names]
    card = CARD.format(
        share=share, trained=1 - share, steps=cfg.max_steps, batch=cfg.batch_size, group=cfg.train_group_size,
        lr=cfg.learning_rate, sizes=" ".join(cfg.sizes), plen=cfg.passage_max_length, qlen=cfg.query_max_length,
        group_less=cfg.train_group_size - 1, ce_weight=cfg.ce_weight, teacher_weight=cfg.teacher_weight,
        kl_weight=cfg.kl_weight, pseudo=PSEUDO,
        anchor=(f", plus an anchor (weight {cfg.anchor_weight:g}) keeping the full size's vectors near the base"
                " model's (1 - cosine per query and passage"
                + "".join(f" and per text of {Path(f).name}" for f in cfg.anchor_files) + ")")
        if cfg.anchor_weight else "",
        holdout=", ".join(f"{n} {c}" for n, c in HOLDOUT.items()),
        shares=", ".join(f"{x:g}" for x in BASE_SHARES),
        out_of_domain=(f"; sets of other domains and tasks that no result below reports ({', '.join(shown)})"
                       " are shown beside them") if shown else "",
        selection=table(selection["candidates"], names), results=results_table(recipe),
        losses=full_size_losses(recipe), config=json.dumps(cfg.to_dict(), indent=2), config_path=recipe.path.name,
    )
    (SHIPPED / "README.md").write_text(card)


CARD = """# starbucks-minilm-l6-srl

A 2D Matryoshka (Starbucks) version of all-MiniLM-L6-v2: every layer of the six, cut to the first
*d* dimensions, is an embedding of its own, fine-tuned with SRL and mixed with the base weights.
Use it with `--model starbucks-minilm-l6-srl`. It was the default model until `starbucks-minilm-l6`
(per-layer adaptors on the frozen all-MiniLM-L6-v2, whose full size it leaves unchanged) replaced it.

- Sizes trained: {sizes} (layer x dims; `hidden_states[n]`, mean pooling, then cut and L2-normalised;
  cosine similarity). Query length {qlen} and passage length {plen} tokens in training; 256 at search.
- Weights: float16 safetensors; they load as float32 on a CPU.

## Recipe

SRL fine-tuning (Zhuang et al. 2024): one forward pass gives every size; per size a cross-entropy
(weight {ce_weight}) over in-batch and BM25 hard negatives (group of {group}: 1 positive + {group_less}
negatives), plus a KL term (weight {kl_weight}) pulling each smaller size's score distribution toward the
full size's, plus a KL term (weight {teacher_weight}) toward the frozen base model's full-size scores over
the same passages{anchor}, all summed.
{steps} steps of {batch} queries, AdamW, lr {lr}, linear warm-up (10 %) and decay, seed 42, on CPU.

Data (`runs/train-data/`, built by the `data` stage): SciFact and NFCorpus train queries with their
judged passages and 30 BM25 negatives each, less held-out queries ({holdout}); and {pseudo} label-free
pseudo-queries from each corpus (a sentence cut from a passage, the rest its positive), which the
teacher term scores. No test split and no DL19 judgement is used.

The trained weights are then mixed with the base model's (`starbucks merge`, WiSE-FT): the share of
base weights is the first of {shares} whose full size matches the base model's on every held-out
train query set{out_of_domain}. Chosen: **{share:g}** base, {trained:g} trained. nDCG@10 (retrieval) or Spearman (STS):

{selection}
## Reproduce

```bash
python -m experiments.training.default_model --config experiments/configs/{config_path}
```

runs every stage (`data`, `train`, `select`, `ship`, `evaluate`; `--stages` picks some) from the
config below.

## Results

nDCG@10 by exact search (SciFact test, NFCorpus dev, the DL19 pool of 16,836 passages: easier than
the full collection) and Spearman of cosine similarity (STS-B test, SICK-R test), every size from
one encoding pass (`python -m experiments.training.default_model --stages evaluate`):

{results}
{losses}
## Training config

```json
{config}
```
"""

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=CONFIG, help="the recipe (default: the shipped model's)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = Recipe(args.config)
    run = {"data": stage_data, "train": stage_train, "select": stage_select, "ship": stage_ship,
           "evaluate": stage_evaluate}
    for stage in STAGES:
        if stage in args.stages:
            print(f"== {stage}", flush=True)
            run[stage](recipe)


if __name__ == "__main__":
    main()
