from tito.main import app

app(prog_name="tito")
