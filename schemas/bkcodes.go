package schemas

// BlueKing Job run status codes (RunStatusEnum) shared by job and step
// instances: the BlueKing surface and the job-finished callback use them.
const (
	BKPending       = 1
	BKRunning       = 2
	BKSuccess       = 3
	BKFailed        = 4
	BKSkipped       = 5
	BKIgnoreError   = 6
	BKWaitingUser   = 7
	BKTerminated    = 8
	BKAbnormal      = 9
	BKStopping      = 10
	BKStopSuccess   = 11
	BKStopFailed    = 12
	BKConfirmedStop = 13
)

// BKRunStatus maps a job or step status word to BlueKing's code.
func BKRunStatus(status string) int {
	switch status {
	case JobWaiting:
		return BKPending
	case JobRunning:
		return BKRunning
	case JobSuccess:
		return BKSuccess
	case JobFailed, JobPartial:
		return BKFailed
	case StepSkipped:
		return BKSkipped
	case StepIgnored:
		return BKIgnoreError
	case JobWaitingUser:
		return BKWaitingUser
	case JobStopping:
		return BKStopping
	case JobStopped:
		return BKStopSuccess
	}
	return BKAbnormal
}

// BKStepInstanceID numbers a job's step for BlueKing, which needs numeric
// step ids: job id × 1000 + step index (jobs have at most MaxSteps steps).
func BKStepInstanceID(job int64, step int) int64 { return job*1000 + int64(step) }

// BKStepOf reads a BlueKing step instance id back.
func BKStepOf(stepInstanceID int64) (job int64, step int) {
	return stepInstanceID / 1000, int(stepInstanceID % 1000)
}
