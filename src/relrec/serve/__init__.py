"""relrec.serve: the HTTP service (FastAPI) and the web explorer.

    from relrec.serve import Settings, create_app
    app = create_app(Settings(run_dir="runs/ml", compare_dir="runs/ml-balanced"))
"""

from relrec.serve.app import Settings, create_app

__all__ = ["Settings", "create_app"]
