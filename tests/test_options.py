"""Option validation: every bad value gets a ValueError that says what to change."""

from __future__ import annotations

import pytest

from lease_guard import ConfigurationError, Elector, MemoryLeaseStore, leadership, only_when_leading
from lease_guard._options import ElectionOptions, default_identity


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease": "Bad_Name"}, "not a valid Lease name"),
        ({"lease": ""}, "non-empty"),
        ({"lease": "a" * 254}, "at most 253"),
        ({"lease": "ok", "namespace": "Not OK"}, "not a valid namespace"),
        ({"lease": "ok", "identity": "  "}, "identity must be a non-empty"),
        ({"lease": "ok", "lease_duration": 0}, "lease_duration must be a positive"),
        ({"lease": "ok", "retry_period": float("nan")}, "retry_period must be a positive"),
        ({"lease": "ok", "renew_deadline": True}, "renew_deadline must be a positive"),
        ({"lease": "ok", "renew_deadline": 15}, r"renew_deadline \(15s\) must be less than lease_duration \(15s\)"),
        ({"lease": "ok", "retry_period": 9}, r"retry_period \* 1.2 \(10.8s\) must be less than renew_deadline"),
    ],
)
def test_invalid_options_name_what_to_change(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        ElectionOptions.build(**options)  # type: ignore[arg-type]
    assert isinstance(raised.value, ValueError)


async def test_every_entry_point_validates_up_front() -> None:
    store = MemoryLeaseStore()
    with pytest.raises(ValueError, match="renew_deadline"):
        Elector("x", renew_deadline=20, store=store)
    with pytest.raises(ValueError, match="renew_deadline"):
        only_when_leading(lease="x", renew_deadline=20)
    with pytest.raises(ValueError, match="Lease name"):
        async with leadership("X_X", store=store):
            pass
    assert store.requests == 0


def test_defaults_are_client_gos() -> None:
    options = ElectionOptions.build("x")
    assert (options.lease_duration, options.renew_deadline, options.retry_period) == (15, 10, 2)
    assert options.release_on_exit


def test_fractional_lease_duration_is_written_rounded_up() -> None:
    assert ElectionOptions.build("x", lease_duration=4.2, renew_deadline=3, retry_period=1).lease_duration_seconds == 5


def test_default_identity_is_unique_per_campaign(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "web-7d9f")
    first, second = default_identity(), default_identity()
    assert first != second
    assert first.startswith("web-7d9f_")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"identity": ""}, "identity must be a non-empty string"),
        ({"identity": "  "}, "identity must be a non-empty string"),
        ({"retry_period": 1e-9, "renew_deadline": 1, "lease_duration": 2}, "retry_period must be at least 0.01"),
        ({"store": object()}, "store must implement the LeaseStore protocol"),
    ],
)
def test_every_entry_point_validates_the_same_way(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Elector("jobs", **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=message):
        only_when_leading(lease="jobs", **options)  # type: ignore[call-overload]


async def test_leadership_validates_before_waiting() -> None:
    with pytest.raises(ConfigurationError, match="store must implement the LeaseStore protocol"):
        async with leadership("jobs", store=object()):  # type: ignore[arg-type]
            raise AssertionError("unreachable")
