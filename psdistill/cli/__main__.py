import sys

from psdistill.cli import main

sys.exit(main())
