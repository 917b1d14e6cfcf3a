"""Per-connection request rate limit: a token bucket, refilled at ``rate`` per second up to ``burst``."""
import time


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.refused_in_a_row = 0

    def take(self) -> bool:
        """True if a request may go ahead now; False (and counted) if it is over the limit."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False
