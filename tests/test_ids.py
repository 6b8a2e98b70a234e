"""UUIDv7 ids: time-ordered, and in the order they were made within one process."""

import uuid

from app.core.ids import uuid7


def test_ids_are_version_7_and_sort_in_the_order_they_were_made() -> None:
    ids = [uuid7() for _ in range(20_000)]  # many in each millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
