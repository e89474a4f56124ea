//! `strata generate template`: the parts of `template.yaml` that follow from the operations' declarations
//! (`strata_api::functions`), written between two marker lines of the committed template. Everything
//! else in the template (parameters, the APIs, tables, queue, the API-wide alarms) is written by hand.
//!
//! Also the parameters whose defaults are the code's (`strata_core::defaults`): their `Default` (and, for
//! the transaction timeout, `MaxValue`) lines are written from the constants.
//!
//! Per function: the function (its `Handler` names the operation for the one Lambda binary), its role
//! with exactly the declared grants, and its log group. The two alarms of every function come from one
//! `Fn::ForEach` over the generated list of function ids. A test fails when the committed template is not
//! what this produces.

use std::fmt::Write;
use strata_api::Deployed;
use strata_http::route::{Access, Pool, Trigger};

pub const BEGIN: &str = "  # ---- Functions: written by `strata generate template` from the operation declarations \
                         (strata_http::route); edit those, not this ----";
pub const END: &str = "  # ---- End of the generated functions ----";

/// The committed template with its generated part replaced by what the declarations produce now.
pub fn template(committed: &str) -> Result<String, String> {
    let begin = committed
        .find(BEGIN)
        .ok_or_else(|| format!("template.yaml has no line {BEGIN:?}"))?;
    let end = committed[begin..]
        .find(END)
        .map(|i| begin + i)
        .ok_or_else(|| format!("template.yaml has no line {END:?} after the first marker"))?;
    let mut out = String::with_capacity(committed.len());
    out.push_str(&parameters(&committed[..begin])?);
    out.push_str(BEGIN);
    out.push('\n');
    out.push_str(&functions(&strata_api::functions()));
    out.push_str(&committed[end..]);
    Ok(out)
}

/// `(parameter, field, value)`: the template's parameter fields that are the code's defaults.
fn parameter_values() -> Vec<(&'static str, &'static str, String)> {
    use strata_core::defaults as d;
    vec![
        (
            "TxIdleTimeoutSeconds",
            "Default",
            d::TX_IDLE_TIMEOUT.as_secs().to_string(),
        ),
        (
            "TxIdleTimeoutSeconds",
            "MaxValue",
            d::TX_IDLE_TIMEOUT_MAX.as_secs().to_string(),
        ),
        (
            "RetentionSeconds",
            "Default",
            d::RETENTION.as_secs().to_string(),
        ),
        (
            "DefaultShareClasses",
            "Default",
            d::SHARE_CLASSES.to_owned(),
        ),
        (
            "CounterMode",
            "Default",
            d::COUNTER_MODE.as_str().to_owned(),
        ),
    ]
}

/// The template's head with each of [`parameter_values`] written into its parameter's block.
fn parameters(head: &str) -> Result<String, String> {
    let mut lines: Vec<String> = head.lines().map(str::to_owned).collect();
    for (parameter, field, value) in parameter_values() {
        let start = lines
            .iter()
            .position(|l| l == &format!("  {parameter}:"))
            .ok_or_else(|| format!("template.yaml has no parameter {parameter}"))?;
        let prefix = format!("    {field}: ");
        let line = lines[start + 1..]
            .iter()
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .position(|l| l.starts_with(&prefix))
            .map(|i| start + 1 + i)
            .ok_or_else(|| format!("template.yaml: parameter {parameter} has no {field}"))?;
        lines[line] = format!("{prefix}{}", yaml_string(&value));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// The resources of every function, then the `Fn::ForEach` of their alarms.
fn functions(all: &[Deployed]) -> String {
    let mut out = String::new();
    for f in all {
        out.push('\n');
        function(&mut out, f);
    }
    let ids: Vec<&str> = all.iter().map(|f| f.deploy().id).collect();
    let _ = write!(
        out,
        r#"
  # Errors and throttles of every function: any in 5 minutes alarms.
  Fn::ForEach::FunctionAlarms:
    - Id
    - [{ids}]
    - Fn::ForEach::Metric:
        - Metric
        - [Errors, Throttles]
        - ${{Id}}${{Metric}}Alarm:
            Type: AWS::CloudWatch::Alarm
            Properties:
              AlarmDescription: ${{Id}}Function ${{Metric}}
              Namespace: AWS/Lambda
              MetricName: ${{Metric}}
              Dimensions: [{{Name: FunctionName, Value: !Sub "${{${{Id}}Function}}"}}]
              Statistic: Sum
              Period: 300
              EvaluationPeriods: 1
              Threshold: 1
              ComparisonOperator: GreaterThanOrEqualToThreshold
              TreatMissingData: notBreaching
              AlarmActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]
              OKActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]

"#,
        ids = ids.join(", ")
    );
    out
}

fn function(out: &mut String, f: &Deployed) {
    let d = f.deploy();
    let id = d.id;
    let (condition, parameter) = match d.pool {
        Pool::Reads => ("ReserveReadsConcurrency", "ReservedConcurrencyReads"),
        Pool::Writes => ("ReserveWritesConcurrency", "ReservedConcurrencyWrites"),
        Pool::Commands => ("ReserveCommandsConcurrency", "ReservedConcurrencyCommands"),
    };
    let _ = writeln!(
        out,
        "  {id}Function:
    Type: AWS::Serverless::Function
    Properties:
      Handler: {name}{description}
      Role: !GetAtt {id}FunctionRole.Arn
      ReservedConcurrentExecutions: !If [{condition}, !Ref {parameter}, !Ref AWS::NoValue]
      LoggingConfig: {{LogGroup: !Ref {id}FunctionLogGroup}}",
        name = f.name(),
        // Only where the route alone does not say what the function does.
        description = if d.note.is_empty() {
            String::new()
        } else {
            format!("\n      Description: {}", yaml_string(&f.description()))
        },
    );
    let mut extra_statements = Vec::new();
    match f {
        Deployed::Route(r) => {
            let scopes = match d.access {
                Access::Read => "!Ref JwtReadScope",
                Access::Write => "!Ref JwtWriteScope",
                Access::Admin => "!Ref JwtAdminScope",
                Access::AnyScope | Access::None => {
                    "!Ref JwtReadScope, !Ref JwtWriteScope, !Ref JwtAdminScope"
                }
            };
            let _ = writeln!(
                out,
                "      Events:
        Http: {{Type: HttpApi, Properties: {{ApiId: !Ref HttpApi, Method: {method}, Path: {path:?},
          Auth: !If [AuthJwt, {{Authorizer: Jwt, AuthorizationScopes: [{scopes}]}}, !If [AuthIam, {{Authorizer: AWS_IAM}}, !Ref AWS::NoValue]]}}}}",
                method = r.method,
                // Quoted (`{path:?}`): braces are flow syntax.
                path = r.path,
            );
        }
        Deployed::Function(func) => match func.trigger {
            // The WebSocket API's integration, route and permission resources name the function.
            Trigger::WebSocket { .. } => {}
            Trigger::CounterLog => {
                out.push_str(COUNTER_LOG_EVENTS);
                extra_statements.push(
                    "{Effect: Allow, Action: [dynamodb:DescribeStream, dynamodb:GetRecords, \
                     dynamodb:GetShardIterator, dynamodb:ListStreams], Resource: !GetAtt CounterLogTable.StreamArn}",
                );
                extra_statements.push(
                    "{Effect: Allow, Action: [sqs:SendMessage], Resource: !GetAtt CounterLogFailureQueue.Arn}",
                );
            }
        },
    }
    // The KMS key's policy only where the function touches a table.
    let kms = if d.grants.is_empty() {
        ""
    } else {
        ", !If [HasTableKmsKey, !Ref TableKmsKeyPolicy, !Ref AWS::NoValue]"
    };
    let _ = writeln!(
        out,
        r#"  {id}FunctionRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument: {{Version: "2012-10-17", Statement: [{{Effect: Allow, Principal: {{Service: lambda.amazonaws.com}}, Action: sts:AssumeRole}}]}}
      ManagedPolicyArns: [!Ref XRayWritePolicy{kms}]
      Policies:
        - PolicyName: {name}
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - {{Effect: Allow, Action: [logs:CreateLogStream, logs:PutLogEvents], Resource: !GetAtt {id}FunctionLogGroup.Arn}}"#,
        name = f.name(),
    );
    for g in d.grants {
        let actions: Vec<String> = g.actions.iter().map(|a| format!("dynamodb:{a}")).collect();
        let _ = writeln!(
            out,
            "              - {{Effect: Allow, Action: [{}], Resource: !GetAtt {}.Arn}}",
            actions.join(", "),
            g.table
        );
    }
    for s in extra_statements {
        let _ = writeln!(out, "              - {s}");
    }
    let _ = writeln!(
        out,
        r#"  {id}FunctionLogGroup:
    Type: AWS::Logs::LogGroup
    Properties: {{LogGroupName: !Sub "/aws/lambda/${{AWS::StackName}}/{name}", RetentionInDays: !Ref LogRetentionDays}}"#,
        name = f.name(),
    );
}

/// The aggregator's events: the counter log's stream, and the re-scan schedule.
const COUNTER_LOG_EVENTS: &str = "      # A re-scan walks the whole log; each page it folds is kept even if a later one runs out of time, and
      # it ends before the schedule's next one starts.
      Timeout: 240
      Events:
        # Batches of up to 1,000 records gathered for up to 1 s: a hot counter's item takes one write per
        # 99 increments instead of one per increment. Malformed records come back as the batch's failures
        # (retried from there, never skipped in silence); a batch that fails past its retries is described
        # on the queue (which alarms), its entries still in the log for the re-scan.
        Log:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt CounterLogTable.StreamArn
            StartingPosition: TRIM_HORIZON
            BatchSize: 1000
            MaximumBatchingWindowInSeconds: 1
            BisectBatchOnFunctionError: true
            MaximumRetryAttempts: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
            DestinationConfig: {OnFailure: {Type: SQS, Destination: !GetAtt CounterLogFailureQueue.Arn}}
        # Whatever the stream skipped, failed or let expire (its records live 24 hours): every entry older
        # than 3 minutes is folded, exactly once, by the same code.
        Rescan:
          Type: Schedule
          Properties:
            Schedule: rate(5 minutes)
            Description: Re-scans the counter log for entries the stream did not fold
            Enabled: true
";

/// A plain YAML scalar when it is one, else double-quoted.
fn yaml_string(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.starts_with([
            '$', '{', '[', '!', '&', '*', '#', '?', '|', '>', '\'', '"', '%', '@',
        ])
        && !s.contains(": ")
        && !s.contains(" #");
    if plain {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}
