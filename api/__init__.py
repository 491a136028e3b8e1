"""HTTP edge of postroom: the FastAPI app, its dependencies, routes and error handlers."""
