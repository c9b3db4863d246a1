import sys

from autocnnp.cli import main

sys.exit(main())
