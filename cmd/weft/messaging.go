package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/admin"
	"github.com/weftmesh/weft/messaging/publish"
)

// msgAPI calls the control plane's messaging API (/api/v1/topics…).
type msgAPI struct {
	base string
	hc   *http.Client
}

func newMsgAPI(server string) (*msgAPI, error) {
	if _, err := apiclient.New(server); err != nil { // same validation and message as every command
		return nil, err
	}
	base := strings.TrimSuffix(server, "/")
	return &msgAPI{base: base, hc: apiclient.HTTPClient(base, 70*time.Second)}, nil
}

func (c *msgAPI) do(ctx context.Context, method, path string, body []byte, h http.Header, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	apiclient.Authorize(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return apiclient.RequestError(c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		if err := apiclient.StatusError(c.base, req, resp.StatusCode, data); err != nil {
			return err
		}
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			if e.Message != "" { // a publish error: code and message
				return fmt.Errorf("%s (%d %s): %s", e.Error, resp.StatusCode, http.StatusText(resp.StatusCode), e.Message)
			}
			return errors.New(e.Error)
		}
		return fmt.Errorf("control plane answered %s", resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("unreadable answer from %s: %w", c.base, err)
		}
	}
	return nil
}

func outputFlag(cmd *cobra.Command) *string {
	return cmd.Flags().StringP("output", "o", "table", "output format: table or json")
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return fmt.Errorf("-o %q: want table or json", o)
	}
	return nil
}

func newTopicsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "Show topics: messages, publish rate, and per subscription lag, in-flight, delivery rate and dead letters",
		Long: `Topics lists every topic the broker holds messages for or that a service
subscribes to. Per topic: messages stored, publish rate, dead letters in
TOPIC.dlq. Per subscription (one per subscribing service): lag (messages not
yet handed to the service), in flight (handed out, not yet settled),
deliveries per second and the service's dead letters. Rates are measured
over the control plane's last few seconds.`,
		Args: cobra.NoArgs,
	}
	server := serverFlag(cmd)
	output := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkOutput(*output); err != nil {
			return err
		}
		c, err := newMsgAPI(*server)
		if err != nil {
			return err
		}
		var res admin.TopicsJSON
		if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/topics", nil, nil, &res); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if *output == "json" {
			return printJSON(out, res)
		}
		if len(res.Topics) == 0 {
			fmt.Fprintf(out, "no topics yet (broker %s)\n", res.Broker)
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOPIC\tMESSAGES\tPUBLISHED/S\tDLQ\tSUBSCRIBER\tLAG\tIN-FLIGHT\tREDELIVERED\tDELIVERED/S\tDEAD-LETTERED")
		for _, t := range res.Topics {
			head := fmt.Sprintf("%s\t%d\t%.1f\t%d", t.Name, t.Messages, t.Rate, t.DeadLetters)
			if len(t.Subscriptions) == 0 {
				fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\n", head)
			}
			for i, s := range t.Subscriptions {
				if i > 0 {
					head = "\t\t\t"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.1f\t%d\n", head, s.Service, s.Lag, s.InFlight, s.Redelivered, s.Rate, s.DeadLettered)
			}
		}
		return tw.Flush()
	}
	return cmd
}

func newPublishCmd() *cobra.Command {
	var key, id, contentType string
	var headers []string
	cmd := &cobra.Command{
		Use:   "publish TOPIC DATA",
		Short: "Publish one message (through the control plane), for trying things",
		Long: `Publish stores DATA ("-": standard input) as one message on TOPIC and prints
its id and sequence once the broker has it. Apps publish through their own
sidecar instead: POST http://127.0.0.1:<outbound>/v1/publish/TOPIC
($WEFT_PUBLISH_URL/TOPIC under weft run).`,
		Example: `  weft publish order.created '{"order":42}' --key user-7
  echo hello | weft publish greetings -`,
		Args: cobra.ExactArgs(2),
	}
	server := serverFlag(cmd)
	f := cmd.Flags()
	f.StringVar(&key, "key", "", "ordering key: messages with one key are delivered in order, one at a time")
	f.StringVar(&id, "id", "", "message id (a repeated id within 2 minutes is stored once; default: a new one)")
	f.StringVar(&contentType, "content-type", "", "Content-Type delivered with the message (default: application/json if DATA is JSON, else text/plain)")
	f.StringArrayVar(&headers, "header", nil, "NAME=VALUE message header, delivered as X-Msg-NAME (repeatable)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		topic := args[0]
		if err := messaging.ValidateTopic(topic); err != nil {
			return err
		}
		data := []byte(args[1])
		if args[1] == "-" {
			var err error
			if data, err = io.ReadAll(io.LimitReader(os.Stdin, messaging.MaxMaxMessageBytes+1)); err != nil {
				return err
			}
		}
		h := http.Header{}
		if contentType == "" {
			contentType = "text/plain; charset=utf-8"
			if json.Valid(data) {
				contentType = "application/json"
			}
		}
		h.Set("Content-Type", contentType)
		if key != "" {
			h.Set(messaging.HTTPKey, key)
		}
		if id != "" {
			h.Set(messaging.HTTPMessageID, id)
		}
		for _, kv := range headers {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("--header %q: want NAME=VALUE", kv)
			}
			h.Add(messaging.HTTPHeaderPrefix+k, v)
		}
		c, err := newMsgAPI(*server)
		if err != nil {
			return err
		}
		var res publish.Result
		if err := c.do(cmd.Context(), http.MethodPost, "/api/v1/topics/"+url.PathEscape(topic)+"/publish", data, h, &res); err != nil {
			return err
		}
		dup := ""
		if res.Duplicate {
			dup = " (duplicate id: already stored, not stored again)"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "published %s to %s, sequence %d%s\n", res.ID, res.Topic, res.Sequence, dup)
		return nil
	}
	return cmd
}

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq list|replay TOPIC",
		Short: "Show or replay the dead letters of a topic",
		Long: `A message lands in its subscription's dead letter topic (TOPIC.dlq unless
the Subscription says otherwise) when the app answered DEADLETTER or a 4xx,
or after maxDeliveries failed attempts. The dead letter keeps the payload
and headers and records the subscriber, the attempts and the last error.

  weft dlq list TOPIC     the dead letters (oldest first, payload truncated)
  weft dlq replay TOPIC   publish them to TOPIC again, for the subscriber that
                          gave up on each only, and remove them from the DLQ`,
	}
	var limit int
	var dlq string
	addFlags := func(c *cobra.Command, defLimit int) *string {
		c.Flags().IntVar(&limit, "limit", defLimit, "at most this many messages")
		c.Flags().StringVar(&dlq, "dlq", "", "the dead letter topic to read (default: TOPIC.dlq and those of TOPIC's subscriptions)")
		return serverFlag(c)
	}
	query := func() string {
		q := url.Values{}
		q.Set("limit", strconv.Itoa(limit))
		if dlq != "" {
			q.Set("dlq", dlq)
		}
		return "?" + q.Encode()
	}

	list := &cobra.Command{Use: "list TOPIC", Short: "List dead letters", Args: cobra.ExactArgs(1)}
	listServer := addFlags(list, admin.DefaultDLQLimit)
	output := outputFlag(list)
	list.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*output); err != nil {
			return err
		}
		if err := messaging.ValidateTopic(args[0]); err != nil {
			return err
		}
		c, err := newMsgAPI(*listServer)
		if err != nil {
			return err
		}
		var res admin.DeadLettersJSON
		if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/topics/"+url.PathEscape(args[0])+"/dlq"+query(), nil, nil, &res); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if *output == "json" {
			return printJSON(out, res)
		}
		fmt.Fprintf(out, "%d dead letters in %s\n", res.Total, strings.Join(res.DeadLetterTopics, ", "))
		if len(res.Messages) == 0 {
			return nil
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tID\tSUBSCRIBER\tATTEMPTS\tDEAD-LETTERED\tLAST ERROR\tPAYLOAD")
		for _, m := range res.Messages {
			at := m.At
			if t, err := time.Parse(time.RFC3339Nano, m.At); err == nil {
				at = t.Local().Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", m.Sequence, m.ID, m.Subscriber, m.Attempts, at, shorten(m.Reason, 60), preview(m))
		}
		return tw.Flush()
	}

	replay := &cobra.Command{Use: "replay TOPIC", Short: "Publish dead letters to their topic again", Args: cobra.ExactArgs(1)}
	replayServer := addFlags(replay, admin.MaxDLQLimit)
	replay.RunE = func(cmd *cobra.Command, args []string) error {
		if err := messaging.ValidateTopic(args[0]); err != nil {
			return err
		}
		c, err := newMsgAPI(*replayServer)
		if err != nil {
			return err
		}
		var res admin.ReplayJSON
		err = c.do(cmd.Context(), http.MethodPost, "/api/v1/topics/"+url.PathEscape(args[0])+"/dlq/replay"+query(), nil, nil, &res)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "replayed %d dead letters to %s (%d failed, %d left in %s)\n",
			res.Replayed, res.Topic, res.Failed, res.Remaining, strings.Join(res.DeadLetterTopics, ", "))
		for _, e := range res.Errors {
			fmt.Fprintln(cmd.ErrOrStderr(), "  "+e)
		}
		if res.Failed > 0 {
			return fmt.Errorf("%d dead letters could not be replayed", res.Failed)
		}
		return nil
	}
	cmd.AddCommand(list, replay)
	return cmd
}

func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return dash(s)
}

func preview(m admin.DeadLetterJSON) string {
	p := strconv.Quote(shorten(m.Payload, 40))
	if m.Truncated || len(m.Payload) > 40 {
		p += fmt.Sprintf(" (%d bytes)", m.Size)
	}
	return p
}
