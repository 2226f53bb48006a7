import sys

from bev_ddp.cli import main

sys.exit(main())
