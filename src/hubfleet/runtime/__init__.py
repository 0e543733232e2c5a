"""What a running fleet leaves on this machine, shared by the daemon that makes it and everyone who reads it:
the daemon's status file, its control socket and the process trees of hubs."""
