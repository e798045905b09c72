from cwfs.cli import main

raise SystemExit(main())
