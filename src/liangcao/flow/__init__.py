"""Admission control (house plan §11): rate and concurrency limits, adaptive limits, priorities, breakers.

A library, not a service: the checkout gateway, the node's HTTP API and the payments service use it. It stands
on the foundations alone, takes its clock from the caller (tests inject one), and never sleeps to refuse.
"""
