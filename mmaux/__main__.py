from mmaux.cli import main

raise SystemExit(main())
