"""The outbox's promise (channels_app/outbox.py): notices go out after commit, in the order queued, and never for a
change that was rolled back (a savepoint's own notices included)."""
import pytest
from django.db import transaction

from channels_app import outbox

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, so on-commit hooks run
published: list[list] = []


def collect(notices):
    published.append(list(notices))


@pytest.fixture(autouse=True)
def collecting(settings):
    published.clear()
    settings.NOTICE_PUBLISHER = "tests.test_outbox.collect"
    yield
    published.clear()


class Boom(Exception):
    pass


def test_nothing_is_published_before_commit_and_all_of_it_after_in_order():
    with transaction.atomic():
        outbox.queue("a")
        outbox.queue("b")
        assert published == []
    assert published == [["a", "b"]]  # one publish for the transaction's outbox


def test_a_rolled_back_transaction_publishes_nothing():
    with pytest.raises(Boom), transaction.atomic():
        outbox.queue("a")
        raise Boom
    assert published == []


def test_a_rolled_back_savepoint_drops_its_own_notices_and_keeps_the_order_of_the_rest():
    with transaction.atomic():
        outbox.queue("a")
        with pytest.raises(Boom), transaction.atomic():
            outbox.queue("lost")
            raise Boom
        outbox.queue("b")
        with transaction.atomic():
            outbox.queue("c")
        outbox.queue("d")
    assert [n for batch in published for n in batch] == ["a", "b", "c", "d"]


def test_outside_a_transaction_a_notice_is_published_at_once():
    outbox.queue("now")
    assert published == [["now"]]
