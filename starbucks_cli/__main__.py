import sys

from starbucks_cli import main

sys.exit(main())
