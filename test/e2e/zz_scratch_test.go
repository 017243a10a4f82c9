package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

func TestScratchGRPCStatus(t *testing.T) {
	for i := range 15 {
		t.Run("", func(t *testing.T) {
			cp := StartControl(t)
			s := StartRun(t, cp, RunOpts{Service: "echo-grpc", AppArgs: []string{"--grpc"}})
			cl := StartClient(t, cp, nil)
			_ = s
			cc, err := grpc.NewClient(cl.OutboundAddr(), grpc.WithAuthority("echo-grpc"), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			tc := testpb.NewTestServiceClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			steps := []*testpb.SimpleRequest{
				{Payload: &testpb.Payload{Body: randBytes(t, 5)}},
				{Payload: &testpb.Payload{Body: randBytes(t, 256<<10)}},
				{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such order"}},
				{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such order"}},
			}
			for j, req := range steps {
				_, err := tc.UnaryCall(ctx, req)
				st := status.Convert(err)
				if (j >= 2 && st.Code() != codes.NotFound) || (j < 2 && err != nil) {
					t.Errorf("iter %d step %d: %v", i, j, err)
				}
			}
		})
	}
}
