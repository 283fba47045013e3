"""Image storage: the local folder and an S3-compatible store (moto's server), same contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.embedded import free_port
from app.settings import Settings
from app.storage import (
    LocalStorage,
    ObjectMissing,
    S3Storage,
    Storage,
    StorageError,
    image_keys,
    storage_from_settings,
)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return storage_from_settings(Settings(MEDIA_BACKEND="local", MEDIA_ROOT=tmp_path))
    endpoint = request.getfixturevalue("s3_endpoint")
    return storage_from_settings(
        Settings(
            MEDIA_BACKEND="s3",
            S3_ENDPOINT_URL=endpoint,
            S3_BUCKET="studio-test",
            S3_ACCESS_KEY_ID="test",
            S3_SECRET_ACCESS_KEY="test",  # type: ignore[arg-type]
        )
    )


def test_put_get_exists_delete(storage: Storage) -> None:
    original, thumb = image_keys("team-1", "job-1", "png")
    assert (original, thumb) == ("teams/team-1/job-1/original.png", "teams/team-1/job-1/thumb.webp")
    assert not storage.exists(original)
    storage.put(original, b"\x89PNG data", "image/png")
    assert storage.exists(original)
    assert storage.get(original) == b"\x89PNG data"
    storage.put(original, b"replaced", "image/png")
    assert storage.get(original) == b"replaced"
    storage.delete(original)
    assert not storage.exists(original)
    with pytest.raises(ObjectMissing):
        storage.get(original)
    storage.delete(original)  # deleting what is gone is fine


@pytest.mark.parametrize("key", ["", "/etc/passwd", "teams/../../x", "a//b", "a\\b", "./a"])
def test_keys_cannot_escape_the_store(storage: Storage, key: str) -> None:
    with pytest.raises(StorageError):
        storage.put(key, b"x", "text/plain")


def test_backends_are_what_settings_say(tmp_path: Path, s3_endpoint: str) -> None:
    local = storage_from_settings(Settings(MEDIA_ROOT=tmp_path))
    assert isinstance(local, LocalStorage) and local.root == tmp_path
    s3 = storage_from_settings(
        Settings(
            MEDIA_BACKEND="s3",
            S3_ENDPOINT_URL=s3_endpoint,
            S3_BUCKET="other-bucket",
            S3_ACCESS_KEY_ID="test",
            S3_SECRET_ACCESS_KEY="test",  # type: ignore[arg-type]
        )
    )
    assert isinstance(s3, S3Storage) and s3.bucket == "other-bucket"
