"""A blog in the shape of Flask's tutorial app ("flaskr"): register, log in, write, edit and delete posts. Audited
with centure-audit-middleware the way an app would be: one Auditor installed by the app factory, the actor named by
the auth layer (`auth.load_logged_in_user`), one `@audited` per state-changing view.

    flask --app flaskr init-db && flask --app flaskr run
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from centure_audit_middleware import Auditor

#: The WorkOS organization every event of this single-tenant blog belongs to (a multi-tenant app would take the
#: signed-in user's).
ORGANIZATION = "org_01FLASKR"


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY="dev",  # overridden by config.py in the instance folder in production
        DATABASE=os.path.join(app.instance_path, "flaskr.sqlite"),
        AUDIT_ORGANIZATION=ORGANIZATION,
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(test_config)

    from . import auth, blog, db

    db.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(blog.bp)
    app.add_url_rule("/", endpoint="index")

    # WORKOS_API_KEY set: WorkOS and the local store; else the local store only. Under the `audit_log` pytest
    # fixture, every Auditor records into the test's log instead: no thread, no file.
    Auditor.from_env().install(app)
    return app
