import sys

from hcltdx.cli import main

sys.exit(main())
