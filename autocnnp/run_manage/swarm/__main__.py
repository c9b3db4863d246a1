"""``python -m autocnnp.run_manage.swarm rendezvous --port P``: see :mod:`.rendezvous`."""

import sys

from autocnnp.run_manage.swarm.rendezvous import main

sys.exit(main())
