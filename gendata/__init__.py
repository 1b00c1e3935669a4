"""Gen-Data producers: question sources, teacher masking and schedules, generation backends and the
teacher-forced scoring pass. Produces Arrow record batches; writes nothing itself. Imports only
schemas/ of ours."""
