from tidings.entrypoints.cli import main

main()
