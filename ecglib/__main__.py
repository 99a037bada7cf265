from ecglib.cli import main

raise SystemExit(main())
