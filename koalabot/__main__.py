import sys

from koalabot.cli import main

sys.exit(main())
