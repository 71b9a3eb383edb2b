"""Operations: backup, restore, disaster recovery, certificates."""
