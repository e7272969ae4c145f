"""Measuring what a group's agent wrote (nanohost/quota.py): links never followed, hard links and
repeated paths counted once, and the quota setting's values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nanohost.quota import DiskQuota, OverQuota, Usage, over_message, parse_quota, tree_bytes
from nanohost.settings import SettingsError, load_settings

MB = 1024 * 1024


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def test_tree_bytes_counts_what_is_written_once_and_never_follows_links(tmp_path: Path) -> None:
    group, host = tmp_path / "group", tmp_path / "host"
    write(group / "a" / "one", 2 * MB)
    write(group / "two", MB)
    write(host / "big", 8 * MB)  # a host tree the agent links to must not count (nor be walked)
    (group / "escape").symlink_to(host)
    (group / "file-link").symlink_to(host / "big")
    os.link(group / "two", group / "two-again")

    measured = tree_bytes([group])
    assert 3 * MB <= measured < 3 * MB + 256 * 1024  # data plus a few directory blocks
    assert tree_bytes([group, group / "a", group / "two"]) == measured
    assert tree_bytes([group / "two"]) >= MB
    assert tree_bytes([tmp_path / "missing"]) == 0


async def test_a_group_over_its_quota_is_refused_until_it_is_under(tmp_path: Path) -> None:
    folder = tmp_path / "group"
    write(folder / "big", 3 * MB)
    quota = DiskQuota(2 * MB)
    await quota.check_wake("team")  # never found over: nothing measured, nothing refused
    quota.mark("team", [str(folder)])
    with pytest.raises(OverQuota, match=r"uses 3\.0 MiB on disk, over its quota of 2\.0 MiB"):
        await quota.check_wake("team")
    (folder / "big").unlink()
    await quota.check_wake("team")
    assert quota.over == {}


async def test_a_groups_own_quota_is_read_at_the_wake_and_wins_over_the_hosts(tmp_path: Path) -> None:
    folder = tmp_path / "group"
    write(folder / "big", 12 * MB)
    quota = DiskQuota(20 * MB)  # the host's: the group is under it
    quota.mark("team", [str(folder)])
    own: list[str | None] = ["10m"]
    with pytest.raises(OverQuota, match=r"over its quota of 10\.0 MiB \(the group's own"):
        await quota.check_wake("team", lambda: own[0])
    own[0] = "50m"  # the operator raised it: the next wake goes ahead, no restart
    await quota.check_wake("team", lambda: own[0])
    assert quota.over == {}
    quota.mark("team", [str(folder)])
    await quota.check_wake("team", lambda: "0")  # 0: no quota for this group
    assert quota.limit(None) == 20 * MB and quota.limit("5g") == 5 * 1024**3 and quota.limit("0") == 0
    usage = Usage(30 * MB, None)
    assert quota.over_quota("team", usage) and not quota.over_quota("team", usage, 0)


def test_a_quota_row_written_behind_the_cli_gets_the_hosts_quota_not_an_error() -> None:
    quota = DiskQuota(20 * MB)
    assert [quota.limit(bad) for bad in ("abc", "5", "default", "", "-1g")] == [20 * MB] * 5
    assert DiskQuota(0).limit("lots") == 0


@pytest.mark.parametrize(
    ("text", "says"), [("5k", "too small for a disk quota"), ("lots", "not a memory size")]
)
def test_a_quota_too_small_or_not_a_size_is_refused_in_its_own_words(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_quota(text)


def test_the_message_names_the_layer_when_the_container_wrote_there() -> None:
    text = over_message("team", Usage(trees=MB, layer=5 * MB), 4 * MB)
    assert "'team' uses 1.0 MiB on disk (+ 5.0 MiB inside its container), over its quota of 4.0 MiB" in text
    assert DiskQuota(4 * MB).over_quota("team", Usage(MB, 5 * MB))
    assert not DiskQuota(0).over_quota("team", Usage(10**12, 10**12))  # 0: off


@pytest.mark.parametrize(("value", "size"), [("10g", 10 * 1024**3), ("512M", 512 * MB), ("0", 0)])
def test_quota_setting(host_env: Path, value: str, size: int) -> None:
    assert load_settings(group_disk_quota=value).group_disk_quota_bytes == size


def test_a_bad_quota_setting_says_what_to_write(host_env: Path) -> None:
    with pytest.raises(SettingsError, match="NANOHOST_GROUP_DISK_QUOTA: 'lots' is not a memory size"):
        load_settings(group_disk_quota="lots")
