"""Chat channels: each turns a platform's events into InboundMessages and sends replies back."""
