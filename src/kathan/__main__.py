from kathan.cli import main

raise SystemExit(main())
