"""``emoray bench``: batch throughput and memory (``batch``), live latency (``live``) against a local RTSP
camera (``camera``, serving ``gst_camera`` under the system Python's GStreamer)."""
