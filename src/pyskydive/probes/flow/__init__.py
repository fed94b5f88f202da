"""Flow probes: packet sources (AF_PACKET rings, pcap, sFlow) that feed the flow table."""
