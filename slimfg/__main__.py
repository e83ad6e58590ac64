from slimfg.launch import cli

cli()
