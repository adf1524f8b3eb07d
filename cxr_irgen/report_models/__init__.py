"""Report generators compared with CXR-IRGen (encoder × decoder study, R2Gen, ...): images → reports."""
