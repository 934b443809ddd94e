"""The Invoke collection. A user's tasks.py is ``from portable_deploy.tasks import ns``; the
deploy.toml next to it is read (or the file $DEPLOY_TOML names).

One module per group of tasks: ``deploy`` (the steps and the chain), ``observe`` (releases,
status), ``audit`` (audit), ``lock`` (lock.status, lock.release), ``logs`` (logs), ``secrets``
(secrets), ``host`` (host.setup) and ``sandbox`` (sandbox.*); ``common`` is what they share.
"""

from __future__ import annotations

from invoke.collection import Collection

from . import audit, deploy, host, init, lock, logs, observe, sandbox, secrets

ns = Collection(
    deploy.build,
    deploy.sign,
    deploy.upload,
    deploy.reattach,
    deploy.verify,
    deploy.deploy,
    deploy.rollback,
    observe.releases,
    logs.logs,
    observe.status,
    audit.audit,
    secrets.secrets,
    init.init,
)
ns.add_collection(Collection.from_module(host, name="host"))
ns.add_collection(Collection.from_module(lock, name="lock"))
ns.add_collection(Collection.from_module(sandbox, name="sandbox"))

__all__ = ["ns"]
