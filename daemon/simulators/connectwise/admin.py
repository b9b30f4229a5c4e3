"""Admin endpoints of the ConnectWise simulator (``/_sim/...``), unauthenticated.

``GET|POST|DELETE /_sim/faults`` read, add to or reset the fault knobs;
``PUT /_sim/roles/{id}/permissions`` sets one permission's levels (or removes
it) so validation failures (R10) can be rehearsed; ``GET /_sim/deliveries``
lists callback delivery attempts; ``POST /_sim/callbacks/release`` sends held
(reordered) callbacks now.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from daemon.simulators.connectwise.faults import FaultConfigError, Faults


def _bad(message: str) -> web.Response:
    return web.json_response({"code": "InvalidObject", "message": message}, status=400)


def add_admin_routes(app: web.Application) -> None:
    from daemon.simulators.connectwise.app import DISPATCHER_KEY, FAULTS_KEY, STATE_KEY

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(request.app[FAULTS_KEY].to_dict())

    async def post_faults(request: web.Request) -> web.Response:
        try:
            doc = orjson.loads(await request.read())
            if not isinstance(doc, dict):
                return _bad("send a JSON object of fault settings")
            request.app[FAULTS_KEY].update(doc)
        except (orjson.JSONDecodeError, FaultConfigError) as exc:
            return _bad(str(exc))
        return web.json_response(request.app[FAULTS_KEY].to_dict())

    async def reset_faults(request: web.Request) -> web.Response:
        fresh = Faults()
        faults = request.app[FAULTS_KEY]
        for name in fresh.to_dict():
            setattr(faults, name, getattr(fresh, name))
        return web.json_response(faults.to_dict())

    async def put_permission(request: web.Request) -> web.Response:
        state = request.app[STATE_KEY]
        role = state.roles.get(int(request.match_info["role"]))
        if role is None:
            return web.json_response({"code": "NotFound", "message": "no such role"}, status=404)
        try:
            doc = orjson.loads(await request.read())
            key = (str(doc["module"]), str(doc["function"]))
            levels = doc.get("levels")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _bad(
                'send {"module", "function", "levels": [add, edit, delete, inquire] | null}'
            )
        if key[0] == "System" and key[1].startswith("Table Setup /"):
            entry = key[1].removeprefix("Table Setup /").strip()
            (role.table_setup.add if levels else role.table_setup.discard)(entry)
        elif levels is None:
            role.permissions.pop(key, None)
        elif (
            isinstance(levels, list)
            and len(levels) == 4
            and all(lv in ("None", "My", "All") for lv in levels)
        ):
            role.permissions[key] = (levels[0], levels[1], levels[2], levels[3])
        else:
            return _bad("levels must be four of None / My / All (add, edit, delete, inquire)")
        return web.json_response({"ok": True})

    async def deliveries(request: web.Request) -> web.Response:
        return web.json_response([d.__dict__ for d in request.app[DISPATCHER_KEY].deliveries])

    async def release(request: web.Request) -> web.Response:
        request.app[DISPATCHER_KEY].release_held()
        return web.json_response({"ok": True})

    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_post("/_sim/faults", post_faults)
    app.router.add_delete("/_sim/faults", reset_faults)
    app.router.add_put("/_sim/roles/{role:\\d+}/permissions", put_permission)
    app.router.add_get("/_sim/deliveries", deliveries)
    app.router.add_post("/_sim/callbacks/release", release)
