from slimfg.cli import main

main()
