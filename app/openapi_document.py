"""The committed OpenAPI document, rendered the same way every time."""

import json

from app.core.config import Settings
from app.main import create_app


def render_openapi() -> str:
    # Default settings, not the environment's: the document must not depend on who renders it.
    app = create_app(Settings(_env_file=None))
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
