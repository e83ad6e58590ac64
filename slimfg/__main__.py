from slimfg.cli import run

run()
