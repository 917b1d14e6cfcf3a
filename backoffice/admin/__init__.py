"""Every admin class of the back office, one module per domain: imported here so Django's admin autodiscovery
(which imports ``backoffice.admin``) registers them all."""
from backoffice.admin import audit, channels, settlements  # noqa: F401
