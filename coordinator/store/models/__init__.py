"""Database tables (SQLAlchemy 2 typed ORM).

Times are UTC epoch seconds (floats): they compare and sort the same in SQLite
and PostgreSQL and feed the pure scheduler directly.
"""

from __future__ import annotations

from coordinator.store.models.accounts import ApiKey as ApiKey
from coordinator.store.models.accounts import AuditEntry as AuditEntry
from coordinator.store.models.accounts import LoginFailure as LoginFailure
from coordinator.store.models.accounts import LoginSession as LoginSession
from coordinator.store.models.accounts import MailToken as MailToken
from coordinator.store.models.accounts import RateHit as RateHit
from coordinator.store.models.accounts import User as User
from coordinator.store.models.accounts import WebhookDelivery as WebhookDelivery
from coordinator.store.models.accounts import WebhookOutbox as WebhookOutbox
from coordinator.store.models.base import Base as Base
from coordinator.store.models.base import fold as fold
from coordinator.store.models.base import loaded as loaded
from coordinator.store.models.billing import ProviderEvent as ProviderEvent
from coordinator.store.models.billing import Subscription as Subscription
from coordinator.store.models.billing import SubscriptionEvent as SubscriptionEvent
from coordinator.store.models.billing import Voucher as Voucher
from coordinator.store.models.billing import VoucherRedemption as VoucherRedemption
from coordinator.store.models.cluster import AgentPresence as AgentPresence
from coordinator.store.models.cluster import Replica as Replica
from coordinator.store.models.cluster import ReplicaLeadership as ReplicaLeadership
from coordinator.store.models.jobs import Agent as Agent
from coordinator.store.models.jobs import DeletedJob as DeletedJob
from coordinator.store.models.jobs import Job as Job
from coordinator.store.models.jobs import JobDecline as JobDecline
from coordinator.store.models.jobs import JobMailOutbox as JobMailOutbox
from coordinator.store.models.jobs import Like as Like
from coordinator.store.models.jobs import Report as Report
from coordinator.store.models.jobs import Result as Result
