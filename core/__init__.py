"""The base layer: what every package of the project may import, and which imports none of them.

    core/errors.py   the project's error types (EmergentBridgeError and its kinds)
    core/files.py    crash-safe writes (`atomic_path`, `atomic_write_json`) and the user cache folder
    core/deps.py     lazy imports of heavy packages (`require`), errors that name what to install
    core/device.py   `--device` (resolve_device, autocast) and torch's CPU threads (`set_threads`)
    core/cli.py      the options every verb and script shares (`--threads`, `--device`)
    core/workers.py  independent trainings side by side in forked workers (`fork_map`, `forked`)

Importing it is cheap: nothing here loads torch until a function asks for it.

Example:
    >>> from core.files import atomic_write_json   # doctest: +SKIP
    >>> from core.deps import require               # doctest: +SKIP
"""
