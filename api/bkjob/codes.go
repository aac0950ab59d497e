package bkjob

import "github.com/fleetjob/fleetjob/schemas"

// BlueKing Job run status codes (RunStatusEnum) shared by job and step
// instances: this surface and the job-finished callback (which the composition
// root hands them) use them.
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
	case schemas.JobWaiting:
		return BKPending
	case schemas.JobRunning:
		return BKRunning
	case schemas.JobSuccess:
		return BKSuccess
	case schemas.JobFailed, schemas.JobPartial:
		return BKFailed
	case schemas.StepSkipped:
		return BKSkipped
	case schemas.StepIgnored:
		return BKIgnoreError
	case schemas.JobWaitingUser:
		return BKWaitingUser
	case schemas.JobStopping:
		return BKStopping
	case schemas.JobStopped:
		return BKStopSuccess
	}
	return BKAbnormal
}

// BKStepInstanceID numbers a job's step for BlueKing, which needs numeric
// step ids: job id × 1000 + step index (jobs have at most schemas.MaxSteps steps).
func BKStepInstanceID(job int64, step int) int64 { return job*1000 + int64(step) }

// BKStepOf reads a BlueKing step instance id back.
func BKStepOf(stepInstanceID int64) (job int64, step int) {
	return stepInstanceID / 1000, int(stepInstanceID % 1000)
}
