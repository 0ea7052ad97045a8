"""Subprocess worker for ``test_reliability_errors.py`` (run as ``python errors_worker.py ROOT``; not collected).

It stores one pair (reliability_workers.store_pair: two nodes, files and a link in one transaction), usually under
``strace`` fault injection. If that fails it records the exception class and whether the two node objects still
claim a pk, then tries the very same objects once more (the injected fault hits one call only). One JSON line on
stdout reports it all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reliability_workers as workers

from sqlitedos import LinkType


def store(storage, data, calc) -> None:  # noqa: ANN001 - a script
    with storage.transaction():
        calc.store()
        data.store()
        data.add_incoming(calc, LinkType.CREATE, 'result')


def main(root: str) -> None:
    result: dict = {'error': None, 'stage': 'open'}
    try:
        storage = workers.open_storage(root)
        try:
            result['stage'] = 'store'
            user = storage.default_user
            data = storage.nodes.create(node_type=workers.DATA_TYPE, user=user, label=workers.DATA_LABEL)
            for path, content in workers.file_contents(data.uuid).items():
                data.repository.put_object_from_bytes(content, path)
            calc = storage.nodes.create(node_type=workers.CALC_TYPE, user=user, label=workers.CALC_LABEL)
            calc.set_attribute('sealed', True)
            result['uuid'] = data.uuid
            try:
                store(storage, data, calc)
            except Exception as exc:
                result.update(error=type(exc).__name__, message=str(exc))
                result['stored_after_failure'] = [data.is_stored, calc.is_stored]
                store(storage, data, calc)
                result['retried'] = True
            result['stored'] = [data.is_stored, calc.is_stored]
        finally:
            storage.close()
    except Exception as exc:
        if result['error'] is None:
            result.update(error=type(exc).__name__, message=str(exc))
        else:
            result.update(retry_error=type(exc).__name__, retry_message=str(exc))
    print('RESULT ' + json.dumps(result), flush=True)


if __name__ == '__main__':
    main(sys.argv[1])
