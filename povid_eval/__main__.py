from povid_eval.cli import main

raise SystemExit(main())
