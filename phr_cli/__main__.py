from phr_cli.cli import app

app(prog_name="phr")
