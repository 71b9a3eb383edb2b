"""The telemetry pipeline: authenticate a device, queue its points, write them in batches.

protocols (osmand.py, batch.py) → credentials.py → queue.py (Envelope) → worker.py → writer.py
"""
