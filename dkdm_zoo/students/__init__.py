"""Students: networks of any architecture built to fit a teacher's spec."""
