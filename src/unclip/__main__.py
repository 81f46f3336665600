from unclip.cli import run

run()
