"""`python -m dagster_project.cli`: the botflow command."""

from dagster_project.cli.main import main

raise SystemExit(main())
