"""tito: the TinyTorch command-line tool (export, test, doctor)."""
