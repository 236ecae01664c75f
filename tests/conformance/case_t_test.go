package conformance

import (
	"context"
	"reflect"
	"testing"
	"unsafe"

	"github.com/containerd/containerd/log"
)

var testingTBType = reflect.TypeOf((*testing.TB)(nil)).Elem()

// caseT recovers the running case's testing.TB from the context the suite
// hands to the factory, or nil if it cannot.
//
// The suite's factory signature carries no *testing.T, yet the daemon's log
// is wanted exactly when a case fails, readable, and not otherwise. The
// suite builds the context with logtest.WithT, whose logrus hook keeps the
// case's T in an unexported field `t`; this reads it. Should a containerd
// version change that, the caller falls back to logging through the context.
func caseT(ctx context.Context) testing.TB {
	for _, hooks := range log.G(ctx).Logger.Hooks {
		for _, hook := range hooks {
			v := reflect.ValueOf(hook)
			if v.Kind() != reflect.Ptr || v.Elem().Kind() != reflect.Struct {
				continue
			}
			field := v.Elem().FieldByName("t")
			if !field.IsValid() || field.Type() != testingTBType {
				continue
			}
			tb, _ := reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem().Interface().(testing.TB)
			if tb != nil {
				return tb
			}
		}
	}
	return nil
}
