"""Kafka out of reach, as the consumer thread rides it out.

The slot cannot reach Kafka while its consumer's group coordinator is unknown.
It then keeps its state and waits: the consumer loop goes round without
fetching, and a checkpoint's waits start again rather than time out (see
:func:`runner.runtime.transactions.block_until`).  The status tells
(``kafka_lost``), the outage is logged once after ``KAFKA_GRACE`` and summed up
when Kafka is back, and one that lasts ``broker_outage_limit`` stops the slot
(:class:`~runner.errors.BrokerUnavailable`) to be started again.
"""

import logging
import time

from kafka import KafkaConsumer

from .. import logs
from ..config import Settings
from ..errors import BrokerUnavailable
from ..kafka.fixes import reaches_kafka
from ..logs import plural
from .status import KAFKA_GRACE, SlotStatus

#: The consumer loop's logger: an outage is told among the loop's lines.
log = logging.getLogger('runner.runtime.consumer')


class KafkaOutage:
    """Whether the slot can reach Kafka now, kept in its status (consumer thread only)."""

    def __init__(self, settings: Settings, status: SlotStatus) -> None:
        self._settings = settings
        self._status = status
        #: Set by the consumer loop once it has created its consumer.
        self.consumer: KafkaConsumer | None = None
        #: Kafka was out of reach since the checkpoints last cleared this.
        self.seen = False
        self._logged = False             # the outage under way was logged

    def waiting_for_kafka(self) -> bool:
        """Whether the slot cannot reach Kafka now (its group coordinator is unknown), as
        the status tells; BrokerUnavailable once that has lasted ``broker_outage_limit``."""
        status, now = self._status, time.monotonic()
        if reaches_kafka(self.consumer):
            if self._logged:
                log.info('Kafka was away for %.0fs; %s of the Kafka client kept at debug level',
                         now - status.kafka_lost,
                         plural(logs.connection_errors_suppressed(), 'connection error'))
            status.kafka_lost, self._logged = None, False
            return False
        status.beat()           # the loop is waiting for Kafka, not stalled
        self.seen = True
        if status.kafka_lost is None:
            status.kafka_lost = now
        elif now - status.kafka_lost >= self._settings.broker_outage_limit:
            raise BrokerUnavailable(f'Kafka could not be reached for '
                                    f'{self._settings.broker_outage_limit:g}s '
                                    '(broker_outage_limit); the slot starts again')
        elif not self._logged and now - status.kafka_lost >= KAFKA_GRACE:
            self._logged = True
            log.warning('Kafka cannot be reached; the slot keeps its state and waits (at '
                        'most broker_outage_limit, %gs)', self._settings.broker_outage_limit)
        return True
