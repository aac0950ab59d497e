package bkjob

import (
	"errors"

	"github.com/labstack/echo/v4"

	"github.com/fleetjob/fleetjob/api"
	"github.com/fleetjob/fleetjob/internal/jobstate"
	"github.com/fleetjob/fleetjob/schemas"
)

// operate_job_instance and operate_step_instance.

// bkTerminateJob is operate_job_instance's only operation.
const bkTerminateJob = 1

// bkStepOps maps operate_step_instance's codes to step operations:
// 2 retry failed hosts, 3 ignore error, 6 confirm (go on), 8 retry all,
// 12 force skip, 13 rolling continue (bk-job's code only: confirm the
// next batch).
var bkStepOps = map[int64]string{
	2: schemas.OpRetryFailed, 3: schemas.OpIgnoreError, 6: schemas.OpConfirm,
	8: schemas.OpRetryAll, 12: schemas.OpSkip, 13: schemas.OpConfirm,
}

// Documented step operations that belong to bk-job's manual-confirmation
// steps and terminated steps, which fleetjob does not have (9 is served:
// it ends a step that waits for a person by terminating the job).
const (
	bkOpConfirmTerminate = 9
	bkOpConfirmRestart   = 10
	bkOpNextStep         = 11
)

type bkOperateJobRequest struct {
	bkCommon
	JobInstanceID bkInt `json:"job_instance_id"`
	OperationCode bkInt `json:"operation_code"`
}

func (s *Surface) bkOperateJobInstance(c echo.Context) error {
	var req bkOperateJobRequest
	caller, err := s.bkBind(c, &req)
	if err != nil {
		return err
	}
	var v bkInvalid
	sc := req.scope(&v)
	id := bkJobID(req.JobInstanceID, &v)
	switch op := req.OperationCode; {
	case !op.Set:
		v.add("operation_code", "required: 1 (terminate the job)")
	case op.V != bkTerminateJob:
		v.add("operation_code", "unknown operation %d: want 1 (terminate the job)", op.V)
	}
	if err := v.err(); err != nil {
		return err
	}
	if err := s.bkTerminate(c, id, sc, caller); err != nil {
		return err
	}
	return bkOK(c, "success", map[string]any{"job_instance_id": id})
}

// bkTerminate stops a job of the caller's scope.
func (s *Surface) bkTerminate(c echo.Context, id int64, sc schemas.Scope, caller bkCaller) error {
	ctx := c.Request().Context()
	_, st, err := s.bkJob(ctx, id, sc)
	if err != nil {
		return err
	}
	if st.Status == schemas.JobStopping {
		return bkErrorf(bkCodeStopping, schemas.ErrConflict, "job instance %d is already terminating", id)
	}
	err = s.core.Stop(ctx, id, caller.user)
	if errors.Is(err, api.ErrFinished) {
		return bkErrorf(bkCodeUnsupportedOp, schemas.ErrConflict, "job instance %d has already finished", id)
	}
	return err
}

type bkOperateStepRequest struct {
	bkCommon
	JobInstanceID  bkInt `json:"job_instance_id"`
	StepInstanceID bkInt `json:"step_instance_id"`
	OperationCode  bkInt `json:"operation_code"`
}

func (s *Surface) bkOperateStepInstance(c echo.Context) error {
	var req bkOperateStepRequest
	caller, err := s.bkBind(c, &req)
	if err != nil {
		return err
	}
	ctx := c.Request().Context() // after authentication: it carries the principal
	var v bkInvalid
	sc := req.scope(&v)
	id := bkJobID(req.JobInstanceID, &v)
	bkStepIDParam(req.StepInstanceID, &v)
	code := req.OperationCode.V
	op, known := bkStepOps[code]
	switch {
	case !req.OperationCode.Set:
		v.add("operation_code", "required")
	case !known && code != bkOpConfirmTerminate && code != bkOpConfirmRestart && code != bkOpNextStep:
		v.add("operation_code", "unknown operation %d: want 2 (retry failed), 3 (ignore error), 6 (confirm), 8 (retry all), 9 (terminate), 12 (skip) or 13 (continue rolling)", code)
	}
	if err := v.err(); err != nil {
		return err
	}
	spec, st, err := s.bkJob(ctx, id, sc)
	if err != nil {
		return err
	}
	step, err := bkStepIndex(id, req.StepInstanceID, spec)
	if err != nil {
		return err
	}
	switch code {
	case bkOpConfirmRestart, bkOpNextStep:
		return bkErrorf(bkCodeUnsupportedOp, schemas.ErrConflict, "operation %d applies to manual-confirmation or terminated steps, which fleetjob does not have", code)
	case bkOpConfirmTerminate:
		if step != st.Step || st.Steps[step].Hold == "" {
			return bkErrorf(bkCodeUnsupportedOp, schemas.ErrConflict, "step instance %d waits for no confirmation", req.StepInstanceID.V)
		}
		err = s.bkTerminate(c, id, sc, caller)
	default:
		err = s.core.Operate(ctx, id, step, op, caller.user)
		var refused *jobstate.Refusal
		if errors.As(err, &refused) {
			err = bkErrorf(bkCodeUnsupportedOp, schemas.ErrConflict, "operation %d on step instance %d: %s", code, req.StepInstanceID.V, refused.Reason)
		} else if errors.Is(err, schemas.ErrConflict) {
			err = &bkError{code: bkCodeUnsupportedOp, err: err}
		}
	}
	if err != nil {
		return err
	}
	return bkOK(c, "success", map[string]any{"step_instance_id": req.StepInstanceID.V, "job_instance_id": id})
}
