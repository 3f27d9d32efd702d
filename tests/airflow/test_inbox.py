"""The LHE inbox's claim, on moto's in-process S3 through the provider's S3Hook: every matching file moves
to the run's claimed prefix once, other files stay, and a retry after a partial move announces all of them."""

from __future__ import annotations

import pytest

from operators.inbox import claimed_prefix, move_to_claimed

BUCKET = "lab"


@pytest.fixture
def s3(monkeypatch):
    import moto
    for name, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "SBI_S3_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with moto.mock_aws():
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=None)
        hook.get_conn().create_bucket(Bucket=BUCKET)
        yield hook


def put(hook, *keys: str) -> None:
    for key in keys:
        hook.load_string("x", key, bucket_name=BUCKET)


def test_matching_files_move_to_the_runs_claimed_prefix_and_others_stay(s3):
    put(s3, "incoming/a.lhe.gz", "incoming/sub/b.lhe", "incoming/notes.txt", "elsewhere/c.lhe")
    files = move_to_claimed(s3, f"s3://{BUCKET}/incoming", "r1")
    assert files == [f"s3://{BUCKET}/incoming-claimed/r1/a.lhe.gz", f"s3://{BUCKET}/incoming-claimed/r1/sub/b.lhe"]
    assert sorted(s3.list_keys(BUCKET)) == ["elsewhere/c.lhe", "incoming-claimed/r1/a.lhe.gz",
                                           "incoming-claimed/r1/sub/b.lhe", "incoming/notes.txt"]
    assert move_to_claimed(s3, f"s3://{BUCKET}/incoming", "r2") == []  # the next run finds an empty inbox


def test_a_retry_after_a_partial_move_announces_every_file_once(s3):
    put(s3, "incoming-claimed/r1/a.lhe", "incoming/b.lhe")  # the first try moved a, then its worker died
    assert move_to_claimed(s3, f"s3://{BUCKET}/incoming/", "r1") == [
        f"s3://{BUCKET}/incoming-claimed/r1/a.lhe", f"s3://{BUCKET}/incoming-claimed/r1/b.lhe"]
    assert claimed_prefix("s3://b/in/", "r9") == "s3://b/in-claimed/r9"
