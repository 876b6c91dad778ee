"""The entry machinery every cloud function shares: events, callers, actions, envelope, logs."""

from caiyun.runtime.actions import Action, Call, CloudFunction
from caiyun.runtime.policies import anyone, signed_in

__all__ = ["Action", "Call", "CloudFunction", "anyone", "signed_in"]
